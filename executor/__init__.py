"""Executor: Kubernetes objects from plans, server-side apply, and the reconcile daemon.

The only package that talks to Kubernetes (planner/ never imports the client).

* :mod:`executor.manifests` - ``build(plan)``: typed ``V1Deployment``/``V1Service`` objects, ``.dicts()``
* :mod:`executor.validate`  - offline strict validation (kubernetes-validate + the 1.20 field snapshot)
* :mod:`executor.apply`     - ``apply_objects(kube, objs, namespace, dry_run=, prune=)`` with a diff
* :mod:`executor.daemon`    - ``run(DaemonConfig(...), stop_event)``: reconcile loop + HTTP API
* :mod:`executor.inventory` - ClusterSpec from Node labels
* :mod:`executor.kube`      - the retrying JSON REST layer over the official client
* :mod:`executor.cli`       - ``synergai manifests | apply | daemon | inventory``

See executor/README.md. Submodules are imported on demand (importing ``executor`` is cheap).
"""
