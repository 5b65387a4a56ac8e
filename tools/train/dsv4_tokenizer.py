"""DeepSeek-V3/V4-style byte-level BPE tokenizer, trained with the `tokenizers` package.

Shared by tools/train/train_tiny.py (the default model's tokenizer) and
tools/reference/make_tokenizer_fixtures.py (parity fixtures for the C++ tokenizer).
Only `tokenizers` is needed; it is imported inside the functions so `--help` works without it.
"""

# DeepSeek-V3's pre-tokenizer (tokenizer.json of deepseek-ai/DeepSeek-V3, also used by V4):
# digits in groups of at most three, CJK/kana runs, then the word / punctuation / whitespace regex,
# then ByteLevel without its own regex.
DIGITS_PATTERN = r"\p{N}{1,3}"
CJK_PATTERN = "[一-龥぀-ゟ゠-ヿ]+"
WORD_PATTERN = (
    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+"
    r"|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
    r"| ?[\p{P}\p{S}]+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
SPECIAL_TOKENS = [BOS, EOS, PAD]  # ids 0, 1, 2 (bos_token_id 0, eos_token_id 1 as in DeepSeek configs)

MIN_TOKENIZERS = (0, 15)


def require_tokenizers():
    try:
        import tokenizers
    except ImportError as e:  # pragma: no cover - message for the GPU machine
        raise SystemExit(f"error: the `tokenizers` package is required ({e}); pip install tokenizers") from e
    version = tuple(int(x) for x in tokenizers.__version__.split(".")[:2])
    if version < MIN_TOKENIZERS:
        raise SystemExit(f"error: tokenizers >= {'.'.join(map(str, MIN_TOKENIZERS))} needed, "
                         f"found {tokenizers.__version__}")
    return tokenizers


def deepseek_pre_tokenizer():
    require_tokenizers()
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(DIGITS_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.Split(Regex(CJK_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])


def train_deepseek_bpe(texts, vocab_size, extra_added=(), min_frequency=2):
    """Trains a byte-level BPE with DeepSeek's pre-tokenizer, special tokens at ids 0..2 and a
    post-processor that prepends BOS (DeepSeek's tokenizers add BOS by default).

    texts: an iterable of strings (the training corpus, in pieces).
    extra_added: tokenizers.AddedToken objects appended after training (ids after the vocab).
    """
    require_tokenizers()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.normalizer = None
    tok.pre_tokenizer = deepseek_pre_tokenizer()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    for i, name in enumerate(SPECIAL_TOKENS):
        got = tok.token_to_id(name)
        if got != i:
            raise RuntimeError(f"special token {name!r} got id {got}, expected {i}")
    if extra_added:
        tok.add_tokens(list(extra_added))
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, 0)])
    return tok
