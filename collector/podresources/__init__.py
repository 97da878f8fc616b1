"""Generated Python stubs for the kubelet pod-resources API v1 (``api.proto``, vendored from kubernetes/kubernetes).

Do not edit ``api_pb2*.py``; regenerate them with the command in ``api.proto``'s header. ``collector.k8s`` is the only
module that uses them.
"""
