from .kernel_support import netns  # noqa: F401  (fixture)
