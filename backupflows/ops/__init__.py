"""What operators read: the extra status keys, the job history
(``view``) and the Prometheus exposition (``metrics``). Reads only."""
