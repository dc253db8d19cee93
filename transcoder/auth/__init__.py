"""auth layer (see ../shared/DESIGN.md, "Layers")."""
