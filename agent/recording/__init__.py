"""The scan path: a tag read becomes a durable journal record, then feedback.

reader (agent.reading) -> card number and debounce -> journal (fsynced) ->
feedback (agent.feedback). Nothing here touches the network.
"""
