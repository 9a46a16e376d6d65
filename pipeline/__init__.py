"""The framework: settings, messages, transport, stages, supervisor, CLI; nothing of vests or models."""
