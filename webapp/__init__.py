"""Terapan web application: Django project and apps (no image maths here)."""
