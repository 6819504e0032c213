"""The long-running service: transports in, one inference thread, predictions out."""
