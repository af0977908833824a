"""Reports: county, provincial, basic-data and policy reports."""
