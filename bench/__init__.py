"""Benchmarks: flowbridge against raw Celery, a raw Kafka consumer and DBOS, side by side.

``python -m bench`` (``make bench``) runs every scenario, ``--quick``
(``make bench-quick``) a smaller version in about two minutes. Each starts its
own tansu and Redis, flowbridge bridge and worker processes and raw-Celery
baseline workers, alternates the two sides, prints median, min, max and the
ratio, and writes ``bench/results/*.json`` and (full runs) the tables in
``docs/performance.md``. Modules:

- ``cli``: arguments, the run, output files;
- ``harness``: errors, waiting, alternation, child processes, shared services;
- ``sides``: the flowbridge and baseline sides of a scenario, and their probes;
- ``scenarios``: scenarios 1-3 (Celery); ``kafka_scenarios``: 4-5 (Kafka);
  ``peer``: 6 (DBOS);
- ``apps``/``joins``: nodes, blueprints and raw-Celery tasks the workers run;
- ``rawconsumer``/``dbos_worker``: the baselines' own processes;
- ``postgres``: a throw-away PostgreSQL cluster; ``profiling``: py-spy;
- ``model``/``report``: results, targets, JSON and Markdown.
"""
