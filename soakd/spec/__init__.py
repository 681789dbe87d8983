"""The soak spec: YAML in, a frozen, validated :class:`Spec` out."""
