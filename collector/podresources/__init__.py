"""The kubelet pod-resources API v1: its client (``client.py``) and the generated Python stubs it uses (``api.proto``,
vendored from kubernetes/kubernetes).

Do not edit ``api_pb2*.py``; regenerate them with the command in ``api.proto``'s header. ``client.py`` is the only
module that uses them.
"""
