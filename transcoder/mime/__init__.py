"""mime layer (see ../shared/DESIGN.md, "Layers")."""
