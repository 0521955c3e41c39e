"""What the tests share, by concern: assertions, databases, apps in-process, real servers,
the pooler, SSE reading, factories, images, metrics. Test modules import from here and
never from each other."""
