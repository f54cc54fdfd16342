"""The small local Spark every Spark test runs on: the in-process session of the
``spark_engine`` fixture and the drivers the Kafka tests start and kill."""

SMALL_LOCAL_SPARK = {
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.driver.memory": "1g",
    # Delta replays a table's log in 50 tasks by default: slow on 2 cores.
    "spark.databricks.delta.snapshotPartitions": "2",
    # A test's JVM lives seconds to minutes, so JIT compiling is much of its CPU: C1 alone
    # took 26 CPU-s where C1+C2 took 46 (a stream's start to its third commit, 2 cores),
    # and the serial collector runs no GC threads beside the test's work.
    "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC",
}
