"""Code several test files share that is not a fixture (fixtures live in conftest.py files)."""
