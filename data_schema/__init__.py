"""Table contracts (Frictionless Table Schema JSON), shipped as package data."""
