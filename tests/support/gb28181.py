"""The GB/T 28181 test camera lives in ferry.camera (the demo and bench use it too)."""
import ferry.camera as _camera

globals().update({k: getattr(_camera, k) for k in dir(_camera) if not k.startswith("__")})
