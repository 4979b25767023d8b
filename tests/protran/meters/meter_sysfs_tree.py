"""Rebuild recorded sysfs layouts (path -> content maps) under a temporary root."""

from __future__ import annotations

from pathlib import Path


def write_tree(root: Path, files: dict[str, object]) -> None:
    """Materialise a recorded ``path -> content`` map under ``root`` (``/sys/x`` -> ``root/sys/x``).

    Strings become files, ``{"symlink_to": target}`` symlinks; ``None`` (no value recorded) and
    ``{"read_error": ...}`` entries are left out, so reading them fails like an absent attribute.
    """
    for path, content in files.items():
        target = root / path.lstrip("/")
        if content is None or (isinstance(content, dict) and "read_error" in content):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict) and "symlink_to" in content:
            if not target.exists() and not target.is_symlink():
                target.symlink_to(content["symlink_to"])
        else:
            target.write_text(str(content))


def link_class(root: Path, device_dir: str, class_dir: str) -> None:
    """Add the /sys/class symlink that points at a device directory, as the kernel does."""
    link = root / class_dir.lstrip("/")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(root / device_dir.lstrip("/"))
