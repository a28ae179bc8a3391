"""zimage_core: headless Z-Image-Turbo library (loading, encoding, sampling, guidance, block upscaling, faces).

Never imports ComfyUI. See README.md for a tour.
"""

__version__ = "0.1.0"
