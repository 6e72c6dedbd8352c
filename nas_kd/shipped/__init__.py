"""Teachers shipped as package data; see nas_kd.models.shipped and manifest.json."""
