"""Images: the built-in ``host`` and ``busybox`` roots (custom ``images:`` layers come later)."""

from kiln.images.builtin import BUILTIN_IMAGES, builtin_image, busybox_image, host_image

__all__ = ["BUILTIN_IMAGES", "builtin_image", "busybox_image", "host_image"]
