"""VEE: validation, estimation and editing of readings (docs/vee.md)."""
