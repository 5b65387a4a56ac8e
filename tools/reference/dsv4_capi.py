"""ctypes binding of dsv4's C API (include/dsv4/dsv4.h) for torch CUDA tensors.

    lib = Dsv4Lib()                       # $DSV4_LIB, else <repo>/build/libdsv4.so
    lib.fused_mtp_input_rms_norm(e, positions, prev, enorm_w, hnorm_w, enorm_out, hnorm_out, eps)
    lab = Dsv4Lib(lab=True)               # the kernel lab's entry points (bench/kernels/rms_norm/lab_capi.cc):
    lab.set_launch(1, 4, 1, -1, 1)        #   the same calls with a launch variant forced,
    lab.last_launch()                     #   and the launch each call resolved to

Every call passes torch's current CUDA stream, so calls can be captured into CUDA graphs, and raises
Dsv4Error (with the library's message) when the C function returns a non-zero status.
"""
import ctypes
import os
from pathlib import Path

DTYPE_CODES = {"torch.float32": 0, "torch.bfloat16": 1, "torch.float16": 2}


class Dsv4Error(RuntimeError):
    def __init__(self, code, text, detail):
        super().__init__(f"dsv4 status {code} ({text}): {detail}")
        self.code = code


def default_library_path():
    env = os.environ.get("DSV4_LIB")
    if env:
        return env
    return str(Path(__file__).resolve().parents[2] / "build" / "libdsv4.so")


def lab_library_path(lib_path):
    """libdsv4_rms_norm_lab.so beside libdsv4.so (a staged lib/ folder), else in the build tree's bench/."""
    here = Path(lib_path).resolve().parent
    for cand in (here / "libdsv4_rms_norm_lab.so", here / "bench" / "libdsv4_rms_norm_lab.so"):
        if cand.exists():
            return str(cand)
    raise FileNotFoundError(f"no libdsv4_rms_norm_lab.so beside {lib_path} (build the bench targets)")


class Dsv4Lib:
    def __init__(self, path=None, lab=False):
        """lab: True (found beside the library) or a path: the kernel calls go through the lab's entry points,
        which take a forced launch variant and report the launch; else through the public C API."""
        self.path = path or default_library_path()
        lib = ctypes.CDLL(self.path)
        vp, i64, f32, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
        lib.dsv4_status_string.argtypes = [i32]
        lib.dsv4_status_string.restype = ctypes.c_char_p
        lib.dsv4_last_error.argtypes = []
        lib.dsv4_last_error.restype = ctypes.c_char_p
        lib.dsv4_fused_mtp_input_rms_norm.argtypes = [vp, vp, vp, vp, vp, vp, vp, i64, i64, i64, f32, i32, vp]
        lib.dsv4_fused_mtp_input_rms_norm.restype = i32
        lib.dsv4_fused_mtp_input_rms_norm_eh.argtypes = [vp, vp, vp, vp, vp, vp, i64, i64, i64, f32, i32, vp]
        lib.dsv4_fused_mtp_input_rms_norm_eh.restype = i32
        lib.dsv4_mtp_shared_head_rms_norm.argtypes = [vp, vp, vp, i64, i64, f32, i32, vp]
        lib.dsv4_mtp_shared_head_rms_norm.restype = i32
        self.lib = lib
        self.lab = None
        self._kernels = lib
        self._prefix = "dsv4_"
        if lab:
            labl = ctypes.CDLL(lab if isinstance(lab, str) else lab_library_path(self.path))
            for name in ("fused_mtp_input_rms_norm", "fused_mtp_input_rms_norm_eh", "mtp_shared_head_rms_norm"):
                fn = getattr(labl, "dsv4_lab_" + name)
                fn.argtypes = getattr(lib, "dsv4_" + name).argtypes
                fn.restype = i32
            labl.dsv4_lab_set_rms_norm_launch.argtypes = [i32] * 8
            labl.dsv4_lab_set_rms_norm_launch.restype = i32
            for name in ("dsv4_lab_last_launch", "dsv4_lab_last_error"):
                getattr(labl, name).argtypes = []
                getattr(labl, name).restype = ctypes.c_char_p
            self.lab = self._kernels = labl
            self._prefix = "dsv4_lab_"

    # ---- raw access (ints in, status out), for error-path tests ------------------------------------
    def status_string(self, code):
        return self.lib.dsv4_status_string(code).decode()

    def last_error(self):
        if self.lab is not None:
            return self.lab.dsv4_lab_last_error().decode()
        return self.lib.dsv4_last_error().decode()

    def check(self, code):
        if code != 0:
            raise Dsv4Error(code, self.status_string(code), self.last_error())

    @staticmethod
    def _stream():
        import torch

        return torch.cuda.current_stream().cuda_stream

    @staticmethod
    def _dtype(t):
        try:
            return DTYPE_CODES[str(t.dtype)]
        except KeyError:
            raise ValueError(f"dsv4 kernels take float32, bfloat16 or float16, got {t.dtype}") from None

    # ---- kernel lab (Dsv4Lib(lab=True)) -------------------------------------------------------------
    def _need_lab(self):
        if self.lab is None:
            raise RuntimeError("launch variants need the kernel lab: Dsv4Lib(lab=True)")
        return self.lab

    def set_variant(self, kernel=0, vecs_per_thread=0, rows_per_block=0, max_blocks=0, plain_loads=0):
        """Forces the launch variant of the lab's entry points (kernel 0 = the heuristic again)."""
        self.set_launch(kernel, vecs_per_thread, rows_per_block, max_blocks, plain_loads)

    def set_launch(self, kernel=0, vecs_per_thread=0, rows_per_block=0, max_blocks=0, plain_loads=0,
                   late_weights=0, trigger=0, blocks_per_sm=0):
        """The full launch override (dsv4::cuda::RmsNormConfig: kernel 1 register, 2 scalar, 3 bulk; trigger
        0..3)."""
        self.check(self._need_lab().dsv4_lab_set_rms_norm_launch(kernel, vecs_per_thread, rows_per_block,
                                                                  max_blocks, plain_loads, late_weights, trigger,
                                                                  blocks_per_sm))

    def last_launch(self):
        return self._need_lab().dsv4_lab_last_launch().decode()

    # ---- torch-tensor calls ---------------------------------------------------------------------------
    def fused_mtp_input_rms_norm(self, e, positions, prev, enorm_w, hnorm_w, enorm_out, hnorm_out, eps):
        T, H = e.shape
        hc = hnorm_out.shape[1]
        self.check(getattr(self._kernels, self._prefix + "fused_mtp_input_rms_norm")(
            e.data_ptr(), positions.data_ptr(), prev.data_ptr(), enorm_w.data_ptr(), hnorm_w.data_ptr(),
            enorm_out.data_ptr(), hnorm_out.data_ptr(), T, H, hc, eps, self._dtype(e), self._stream()))

    def fused_mtp_input_rms_norm_eh(self, e, positions, prev, enorm_w, hnorm_w, out, eps):
        T, H = e.shape
        hc = out.shape[1]
        self.check(getattr(self._kernels, self._prefix + "fused_mtp_input_rms_norm_eh")(
            e.data_ptr(), positions.data_ptr(), prev.data_ptr(), enorm_w.data_ptr(), hnorm_w.data_ptr(),
            out.data_ptr(), T, H, hc, eps, self._dtype(e), self._stream()))

    def mtp_shared_head_rms_norm(self, x, w, out, eps):
        T, H = x.shape
        self.check(getattr(self._kernels, self._prefix + "mtp_shared_head_rms_norm")(
            x.data_ptr(), w.data_ptr(), out.data_ptr(), T, H, eps, self._dtype(x), self._stream()))
