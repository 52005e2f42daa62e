"""assemble stage of gears_h_core."""
