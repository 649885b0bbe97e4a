"""Generated reports: one folder per study under ``reports/`` with tables, figures and conclusions."""
