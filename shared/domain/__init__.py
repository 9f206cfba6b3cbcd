"""The business rules: event models, holds, payments, message templates. No I/O clients."""
