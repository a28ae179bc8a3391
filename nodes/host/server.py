"""ComfyUI's server: its PromptServer, its loopback URL, and preview images written where the UI shows them."""

from __future__ import annotations

import torch

from .folders import temp_dir
from .guards import inside_comfyui

def prompt_server():
    """ComfyUI's PromptServer instance, or None (no ComfyUI, or ComfyUI without its server, e.g. in scripts)."""
    if not inside_comfyui():
        return None
    try:
        import server  # type: ignore

        return getattr(server.PromptServer, "instance", None)
    except Exception:  # noqa: BLE001
        return None


def server_base_url(server) -> str:
    """Loopback URL of ComfyUI's own HTTP server (to queue prompts through the same code path as POST /prompt)."""
    address = getattr(server, "address", None) or "127.0.0.1"
    port = getattr(server, "port", None) or 8188
    if address in ("0.0.0.0", ""):
        address = "127.0.0.1"
    elif address == "::":
        address = "::1"
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"
    scheme = "http"
    try:
        from comfy.cli_args import args  # type: ignore

        if getattr(args, "tls_keyfile", None) and getattr(args, "tls_certfile", None):
            scheme = "https"
    except Exception:  # noqa: BLE001
        pass
    return f"{scheme}://{address}:{port}"


def save_previews(images: torch.Tensor, prefix: str = "zimage_preview") -> list[dict]:
    """Write (B,H,W,3) images as PNGs to ComfyUI's temp folder and return the `ui.images` entries that show them
    on the node. Outside ComfyUI nothing is written (there is no UI to show them)."""
    if not inside_comfyui():
        return []
    import uuid

    from zimage_core.images import to_pil

    folder = temp_dir()
    folder.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:10]
    out = []
    for i in range(images.shape[0]):
        name = f"{prefix}_{tag}_{i:05d}.png"
        to_pil(images, i).save(folder / name, compress_level=1)
        out.append({"filename": name, "subfolder": "", "type": "temp"})
    return out
