"""What to measure and how much."""


class Settings:
    """Counts per section; --quick shrinks them to a smoke run."""

    def __init__(self, args):
        quick = args.quick
        self.quick = quick
        self.url = args.url
        self.rounds = args.rounds or (1 if quick else 3)
        self.count = args.count or (30_000 if quick else 200_000)
        self.body_size = 100
        self.prefetches = [int(p) for p in args.prefetch.split(",")]
        self.window = 1000
        self.concurrency = 8
        self.handler_count = args.handler_count or (10_000 if quick else 50_000)
        self.http_count = 3_000 if quick else 20_000
        self.exec_count = args.exec_count or (300 if quick else 2_000)
        self.py_count = args.py_count or (10_000 if quick else 20_000)
        self.latency_rate = 2_000
        self.latency_seconds = args.latency_seconds or (8 if quick else 30)
        self.scale_queues = 100
        self.scale_messages = 200 if quick else 1_000
        self.rss_queues = 10
        self.rss_messages = 5_000 if quick else 20_000
        self.soak_count = args.soak_count or (200_000 if quick else 1_000_000)
        self.profile_count = 50_000 if quick else 200_000

    def as_dict(self):
        return {k: v for k, v in vars(self).items()}
