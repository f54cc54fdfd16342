"""Airflow DAG files (shoplake_dags.py); this folder is the DAGs folder."""
