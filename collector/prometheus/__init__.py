"""Reading a Prometheus that already scrapes dcgm-exporter and kube-state-metrics (``gpuledger scrape``).

``client.py`` sends the range queries (bounded, retried, authenticated by ``credentials.py``), ``series.py`` reads
their answers, ``kube_state.py`` turns kube-state-metrics series into rows, ``spans.py`` plans the chunks and keeps
the spans done, and ``scraper.py`` runs a scrape chunk by chunk into the store it is handed.
"""
