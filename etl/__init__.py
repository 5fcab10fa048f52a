"""ETL: raw clickstream and order logs -> Parquet transition datasets."""
