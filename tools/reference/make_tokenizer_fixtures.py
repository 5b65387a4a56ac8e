#!/usr/bin/env python3
"""Tokenizer parity fixtures for dsv4's C++ tokenizer, produced with the `tokenizers` package.

Writes into OUT (flat: the GPU machine hands back files at most two folders down; copy them all into
tests/fixtures/tokenizer/):

  tests/fixtures/tokenizer/deepseek_style.tokenizer.json   DeepSeek-V3/V4 pre-tokenizer (Split regexes +
                                                           ByteLevel), BPE trained here, BOS template,
                                                           special and non-special added tokens
  tests/fixtures/tokenizer/gpt2_style.tokenizer.json       same merges, NFC normalizer, Digits and
                                                           ByteLevel(add_prefix_space, use_regex)
  tests/fixtures/tokenizer/split_behaviors.tokenizer.json  same merges, every Split behavior / invert
  tests/fixtures/tokenizer/NAME.cases.json                 for each: encode ids (with and without
                                                           special tokens), decodes, id-sequence decodes
  tests/fixtures/tokenizer/dsv4_tiny_kjv.cases.json        cases for the default model's tokenizer
                                                           (models/dsv4-tiny-kjv/tokenizer.json), if
                                                           --model-tokenizer is given or that file exists

Every input is stored as hex bytes: some are deliberately invalid UTF-8. For those the expected ids
are those of `raw.decode("utf-8", errors="replace")`, which is what dsv4's encode() does with them.

Usage: make_tokenizer_fixtures.py --out DIR [--corpus kjv.txt] [--model-tokenizer PATH]
"""

import argparse
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools", "train"))

import dsv4_tokenizer  # noqa: E402  (path set up above)

FIXTURE_DIR = "tests/fixtures/tokenizer"
MODEL_TOKENIZER = "models/dsv4-tiny-kjv/tokenizer.json"

# A small multilingual / code corpus so the trained merges cover more than English.
BUILTIN_CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's 3:45pm; don't forget the 1,234,567 items!",
    "I'll say they've been there, we'd go, you're right, she's here, I'm done.",
    "def fibonacci(n: int) -> int:\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "for (int i = 0; i < n; ++i) {\n  sum += values[i] * 2;  // accumulate\n}\n",
    "#include <vector>\nstd::vector<int32_t> ids = tok.encode(\"hello\");\nreturn ids.size() > 0 ? 0 : 1;\n",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name ORDER BY 2 DESC;",
    "今天天气很好，我们去公园散步吧。中华人民共和国成立于一九四九年。学习使我快乐！",
    "深度学习模型需要大量的数据和计算资源。自然语言处理是人工智能的重要分支。",
    "こんにちは、世界。カタカナとひらがなを混ぜたテキストです。東京タワーへ行きましょう。",
    "안녕하세요, 세계! 한국어 텍스트도 포함합니다.",
    "Emoji: 😀😃😄 👍🏽 🎉🎊 ❤️ 👨‍👩‍👧‍👦 🇫🇷 ✨ and more 🚀🔥",
    "Numbers: 0 12 345 6789 3.14159 2.71828 1e-9 -42 +7 100% 2024-01-01T12:30:00Z",
    "Ünïcödé àccents: café, naïve, résumé, São Paulo, Zürich, Kraków, İstanbul, straße.",
    "Русский текст, ελληνικά, עברית, العربية, हिन्दी, ไทย.",
    "    indented\n\n\n\tlines\twith\ttabs   and   runs    of     spaces      \r\n",
    "URL https://example.com/path?query=1&x=y#frag and email user@example.org",
]


def hexs(b: bytes) -> str:
    return b.hex()


def sample_inputs(kjv_lines):
    """(name, raw bytes) pairs: the varied sample the issue asks for, plus edge cases."""
    s = [
        ("english", "In the beginning God created the heaven and the earth."),
        ("contractions", "Don't you think it's odd? I'll see; we've gone, they'd've known."),
        ("chinese", "今天天气很好，我们去公园散步吧。"),
        ("japanese", "こんにちは、カタカナとひらがな。"),
        ("korean", "안녕하세요 세계"),
        ("emoji", "Hi 👋🏽! Party 🎉🎊 family 👨‍👩‍👧 flag 🇯🇵 heart ❤️"),
        ("code_python", "def f(x):\n    return x**2 + 1  # square\n\nprint(f(3))\n"),
        ("code_cpp", "int main() {\n\tstd::cout << \"hi\\n\";\n\treturn 0;\n}\n"),
        ("whitespace_runs", "a  b   c    d\t\te\n\n\nf   \n  g\r\n\r\nh     "),
        ("leading_trailing_space", "   padded text   "),
        ("only_spaces", "      "),
        ("newlines", "\n\n\n"),
        ("digits", "1 12 123 1234 12345 123456 3.14159 1,000,000 0x1F 2024-01-01"),
        ("unicode_digits", "٣٤٥ १२३ １２３ ½ ² Ⅻ"),
        ("accents", "café naïve résumé Zürich straße İstanbul"),
        ("combining", "e\u0301 a\u0308 n\u0303 \u1100\u1161"),
        ("mixed_scripts", "English 中文 日本語 한국어 Русский العربية mixed"),
        ("punctuation", "Hello,world!How-are_you?(fine)[ok]{yes}<tag>'quote\"... --- ***"),
        ("special_tokens", f"{dsv4_tokenizer.BOS}Hello{dsv4_tokenizer.EOS}"),
        ("special_inline", f"a{dsv4_tokenizer.EOS}b {dsv4_tokenizer.PAD} c"),
        ("added_nonspecial", "x <think>reason</think> y [MASK] z  <|fim|>  w"),
        ("long_word", "a" * 300 + " " + "ab" * 150),
        ("empty", ""),
        ("single_space", " "),
        ("url", "https://example.com/a/b?c=1&d=2#e"),
    ]
    out = [(n, t.encode("utf-8")) for n, t in s]
    for i, line in enumerate(kjv_lines):
        out.append((f"kjv_{i}", line.encode("utf-8")))
    # Invalid UTF-8: lone continuation bytes, truncated sequences, surrogates, overlong forms.
    out += [
        ("invalid_ff_fe", b"abc\xff\xfedef"),
        ("invalid_truncated_cjk", "中文".encode()[:-1] + b" tail"),
        ("invalid_truncated_end", b"end \xe4\xbd"),
        ("invalid_surrogate", b"x\xed\xa0\x80y"),
        ("invalid_overlong", b"\xc0\xaf\xe0\x80\xaf"),
        ("invalid_truncated_emoji", b"\xf0\x9f\x98 ok \xf0\x9f"),
        ("invalid_lone_continuations", b"\x80\x81\xbf plain"),
    ]
    return out


def make_cases(tok, inputs, rng):
    cases = []
    for name, raw in inputs:
        text = raw.decode("utf-8", errors="replace")
        ids = tok.encode(text, add_special_tokens=False).ids
        ids_special = tok.encode(text, add_special_tokens=True).ids
        cases.append({
            "name": name,
            "input_hex": hexs(raw),
            "ids": ids,
            "ids_with_special": ids_special,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
        })
    # Decodes of id sequences that need not form valid UTF-8: prefixes cutting through multi-byte
    # characters, and random ids (byte-level tokens that are partial characters).
    decode_cases = []
    for name, raw in inputs:
        if name in ("emoji", "chinese", "mixed_scripts", "japanese"):
            ids = tok.encode(raw.decode("utf-8"), add_special_tokens=False).ids
            for k in range(1, len(ids) + 1):
                decode_cases.append({"ids": ids[:k], "text": tok.decode(ids[:k], skip_special_tokens=False)})
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    for _ in range(40):
        ids = [rng.randrange(vocab_size) for _ in range(rng.randrange(1, 12))]
        decode_cases.append({"ids": ids, "text": tok.decode(ids, skip_special_tokens=False)})
    return cases, decode_cases


def write_fixture(out_dir, name, tok, tokenizer_rel_path, inputs, rng, write_tokenizer=True):
    import tokenizers

    fdir = out_dir
    os.makedirs(fdir, exist_ok=True)
    if write_tokenizer:
        tok.save(os.path.join(out_dir, os.path.basename(tokenizer_rel_path)), pretty=False)
    cases, decode_cases = make_cases(tok, inputs, rng)
    vocab = tok.get_vocab(with_added_tokens=True)
    inv = {i: t for t, i in vocab.items()}
    sample_ids = sorted(set([0, 1, 2, 3, 100, 255, 256, 257] + rng.sample(sorted(inv), min(40, len(inv)))))
    fx = {
        "generator": "tools/reference/make_tokenizer_fixtures.py",
        "tokenizers_version": tokenizers.__version__,
        "tokenizer": tokenizer_rel_path,
        "vocab_size": max(inv) + 1,
        "bos_id": tok.token_to_id(dsv4_tokenizer.BOS),
        "eos_id": tok.token_to_id(dsv4_tokenizer.EOS),
        "token_samples": [[i, inv[i]] for i in sample_ids if i in inv],
        "cases": cases,
        "decode_cases": decode_cases,
    }
    path = os.path.join(fdir, f"{name}.cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(fx, f, ensure_ascii=False, separators=(",", ":"))
    size = os.path.getsize(path)
    print(f"{name}: {len(cases)} encode cases, {len(decode_cases)} decode cases, {size / 1024:.0f} KiB -> {path}")
    return fx


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (copy its files to tests/fixtures/tokenizer/)")
    ap.add_argument("--corpus", default=None, help="plain-text corpus (e.g. the KJV from prepare_corpus.sh)")
    ap.add_argument("--model-tokenizer", default=None,
                    help=f"tokenizer.json of the default model (default: {MODEL_TOKENIZER} if present)")
    ap.add_argument("--vocab-size", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    tokenizers = dsv4_tokenizer.require_tokenizers()
    from tokenizers import AddedToken, normalizers, pre_tokenizers, Regex

    print(f"tokenizers {tokenizers.__version__}", flush=True)
    rng = random.Random(args.seed)
    kjv_lines = []
    texts = list(BUILTIN_CORPUS) * 20
    if args.corpus:
        with open(args.corpus, encoding="utf-8") as f:
            lines = [ln.rstrip("\n") for ln in f if ln.strip()]
        texts += lines
        kjv_lines = rng.sample(lines, 8)
    else:
        print("note: no --corpus; training the fixture tokenizer on the built-in sample only")

    extra = [
        AddedToken("<think>", special=False, normalized=False),
        AddedToken("</think>", special=False, normalized=False),
        AddedToken("[MASK]", special=False, normalized=True, single_word=True),
        AddedToken("<|fim|>", special=True, normalized=False, lstrip=True, rstrip=True),
    ]
    tok = dsv4_tokenizer.train_deepseek_bpe(texts, args.vocab_size, extra_added=extra)
    inputs = sample_inputs(kjv_lines)
    write_fixture(args.out, "deepseek_style", tok, f"{FIXTURE_DIR}/deepseek_style.tokenizer.json", inputs, rng)

    # The same merges under other pipeline stages the C++ side implements.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True),
    ])
    write_fixture(args.out, "gpt2_style", tok, f"{FIXTURE_DIR}/gpt2_style.tokenizer.json", inputs, rng)

    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("``", '"')])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(" ", behavior="merged_with_previous"),
        pre_tokenizers.Split(Regex(r"\p{N}"), behavior="contiguous"),
        pre_tokenizers.Split(Regex(r"[.,;:!?]"), behavior="merged_with_next"),
        pre_tokenizers.Split(Regex(r"\t+"), behavior="removed"),
        pre_tokenizers.Split(Regex(r"[()\[\]{}]"), behavior="isolated", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    write_fixture(args.out, "split_behaviors", tok, f"{FIXTURE_DIR}/split_behaviors.tokenizer.json", inputs, rng)

    model_tok = args.model_tokenizer or os.path.join(REPO, MODEL_TOKENIZER)
    if os.path.exists(model_tok):
        from tokenizers import Tokenizer

        mt = Tokenizer.from_file(model_tok)
        write_fixture(args.out, "dsv4_tiny_kjv", mt, MODEL_TOKENIZER, inputs, rng, write_tokenizer=False)
    else:
        print(f"note: {model_tok} not found; no fixture for the default model's tokenizer "
              "(train it first, or pass --model-tokenizer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
