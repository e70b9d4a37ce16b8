"""Opsbook's toolkit for runbook notebooks: inventory, batches, plays, health gates, silences.

The modules here hold the logic only; notebook widgets call them and add nothing but a face, so
everything a runbook does can also be scripted and tested without a kernel.
"""
