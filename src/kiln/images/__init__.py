"""Images: the built-in ``host`` and ``busybox`` roots, and custom images built from ``images:``.

Custom images are content-addressed OCI layers, keyed and built by :mod:`kiln.images.builder` (see
``docs/design-images.md``). This package's root exports only the built-in images: the runner
imports it, and the control plane's side (:mod:`kiln.images.service`) must stay out of its reach.
"""

from kiln.images.builtin import BUILTIN_IMAGES, builtin_image, busybox_image, host_image

__all__ = ["BUILTIN_IMAGES", "builtin_image", "busybox_image", "host_image"]
