"""Integrations with other libraries' data containers (imported on demand; each needs its library)."""
