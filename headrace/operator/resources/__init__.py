"""Pure builders of the objects the operator owns, one module per kind. They make no API calls."""
