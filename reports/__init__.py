"""Report generation: harvested run summaries + experiment declarations -> Markdown and CSV tables."""
