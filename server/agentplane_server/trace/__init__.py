"""TraceService and OTLP ingestion: spans from any OpenTelemetry exporter, search, retention."""
