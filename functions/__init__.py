"""One module per function: each reaction of the booking saga, the schedules and the HTTP edge."""
