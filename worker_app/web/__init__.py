"""The console: dead letters, queues, workers and tasks as web pages and a JSON API."""
