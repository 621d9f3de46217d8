"""The application shell: settings, the Faust app, CLI, web views, metrics, local Kafka."""
