"""The native code the agents run, exercised once (run under sandbox_run.py by the tests):
SM2 (gmssl-pyx), SM3 and SM4-GCM (cryptography, cffi), a Pillow re-encode, a PyAV H.264
encode and decode (libx264, FFmpeg), a ctypes callback (libffi closure, as pip-nftables uses
ctypes). Prints "native ok" if all ran."""
from __future__ import annotations

import ctypes
import io

import av
from PIL import Image

from ferry.crypto import SM2PrivateKey
from ferry.crypto.sm3 import sm3
from ferry.crypto.sm4 import SM4GCM


def main() -> None:
    key = SM2PrivateKey.generate()
    sig = key.sign(b"ferry")
    key.public_key().verify(b"ferry", sig)       # raises if wrong
    assert len(sm3(b"ferry")) == 32
    gcm = SM4GCM(bytes(16))
    assert gcm.open(bytes(12), gcm.seal(bytes(12), b"ferry", b"aad"), b"aad") == b"ferry"
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(out, "PNG")
    Image.open(io.BytesIO(out.getvalue())).convert("L").save(io.BytesIO(), "JPEG")
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame(64, 48, "yuv420p")
            for plane in frame.planes:
                plane.update(bytes([i * 20]) * plane.buffer_size)
            for pkt in s.encode(frame):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    buf.seek(0)
    with av.open(buf) as c:
        assert sum(1 for _ in c.decode(video=0)) == 10
    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
    libc = ctypes.CDLL(None)
    arr = (ctypes.c_int * 3)(3, 1, 2)
    libc.qsort(arr, 3, ctypes.sizeof(ctypes.c_int),
               callback(lambda a, b: ctypes.cast(a, ctypes.POINTER(ctypes.c_int))[0]
                        - ctypes.cast(b, ctypes.POINTER(ctypes.c_int))[0]))
    assert list(arr) == [1, 2, 3]
    print("native ok", flush=True)


if __name__ == "__main__":
    main()
