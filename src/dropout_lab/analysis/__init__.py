"""Tables and statistics over stored runs."""
