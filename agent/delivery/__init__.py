"""Delivery of the journal to iFlow.

* :mod:`agent.delivery.wire`: what is sent and what an answer means (pure);
* :mod:`agent.delivery.client`: :class:`~agent.delivery.client.IflowClient`, the HTTP client;
* :mod:`agent.delivery.backlog`: which pending records are sendable, which held and why;
* :mod:`agent.delivery.deliverer`: :class:`~agent.delivery.deliverer.Deliverer`, batches, outcomes, back-off;
* :mod:`agent.delivery.uploader`: the daemon's background sender.

Import from the modules themselves: this package imports nothing, so
counting the backlog does not load httpx.
"""
