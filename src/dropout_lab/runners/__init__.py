"""Runners: study workers (grid and tuning), the ask/tell tuner, sweeper jobs and local worker processes."""
