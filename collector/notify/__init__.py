"""Notifications of new high-severity alerts and case changes to WeCom group robots and email.

models.py (the outbox row and its lifecycle table), messages.py (the texts, pure), service.py (turns
stored alerts and case changes into outbox rows, plans deliveries under each target's rate limit),
wecom.py and mail.py (the two transports, the only modules here that do network I/O), worker.py (the
background stage), views.py (GET /api/v1/notifications).
"""
