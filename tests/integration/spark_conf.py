"""The small local Spark every Spark test runs on: the in-process session of the
``spark_engine`` fixture and the drivers the Kafka tests start and kill."""

SMALL_LOCAL_SPARK = {
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.driver.memory": "1g",
    # Delta replays a table's log in 50 tasks by default: slow on 2 cores.
    "spark.databricks.delta.snapshotPartitions": "2",
}

# A driver that lives seconds (the Kafka tests kill it) spends much of its CPU compiling:
# C1 alone took 26 CPU-s where C1+C2 took 46 (a stream's start to its third commit, 2
# cores). The session the other tests share for minutes is better off with C2: on C1 the
# Spark runtime tests took ~30% longer in a full run.
SHORT_LIVED_DRIVER = SMALL_LOCAL_SPARK | {
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
}
