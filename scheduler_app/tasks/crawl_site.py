"""Crawl this site's own pages in-process and report broken links (no network involved)."""

from __future__ import annotations

from collections import Counter, deque
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlparse

from asgiref.sync import sync_to_async
from django.conf import settings
from django.test import Client
from django.urls import NoReverseMatch, reverse

from scheduler_app.tasks.base import BaseTask, ScheduleType, TaskResult, TaskSchedule


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.extend(value for name, value in attrs if name == "href" and value)


def _host() -> str:
    for host in settings.ALLOWED_HOSTS:
        if host and "*" not in host:
            return host.lstrip(".")
    return "localhost"


def _paths(names: tuple[str, ...]) -> tuple[str, ...]:
    """The paths of these URL names that the site's URLconf has (a project may have no admin)."""
    paths = []
    for name in names:
        try:
            paths.append(reverse(name))
        except NoReverseMatch:
            continue
    return tuple(paths)


class CrawlSiteTask(BaseTask):
    """Crawl the site's own pages and report broken links."""

    name = "crawl_site"
    description = "Crawl this site's own pages (in-process, no network) and report broken links"
    schedule = TaskSchedule(schedule_type=ScheduleType.CRON, cron_expression="0 2 * * *")
    timeout = 300

    # URL names, not paths: the host project mounts the admin and the API where it likes.
    start_urls: tuple[str, ...] = ("admin:login", "scheduler-api:docs")
    max_pages = 100
    # Following these would change state or leave the site.
    skip_urls: tuple[str, ...] = ("admin:logout",)

    @property
    def start_paths(self) -> tuple[str, ...]:
        return ("/", *_paths(self.start_urls))

    @property
    def skip_prefixes(self) -> tuple[str, ...]:
        return _paths(self.skip_urls)

    async def run(self) -> TaskResult:
        return await sync_to_async(self.crawl)()

    def crawl(self) -> TaskResult:
        client = Client(HTTP_HOST=_host())
        queue: deque[str] = deque(self.start_paths)
        seen: set[str] = set(self.start_paths)
        statuses: Counter[int] = Counter()
        broken: list[dict[str, object]] = []
        pages = 0
        while queue and pages < self.max_pages:
            path = queue.popleft()
            response = client.get(path, follow=False)
            pages += 1
            statuses[response.status_code] += 1
            if response.status_code == 404 or response.status_code >= 500:
                broken.append({"path": path, "status": response.status_code})
            if response.status_code in (301, 302, 303, 307, 308):
                self._enqueue(urljoin(path, response["Location"]), queue, seen)
                continue
            if "text/html" not in response.get("Content-Type", ""):
                continue
            parser = _LinkParser()
            parser.feed(response.content.decode(response.charset or "utf-8", errors="replace"))
            for link in parser.links:
                self._enqueue(urljoin(path, link), queue, seen)
        summary = f"crawled {pages} page(s), {len(broken)} broken"
        data = {"pages": pages, "status_counts": {str(k): v for k, v in sorted(statuses.items())}, "broken": broken}
        if broken:
            return TaskResult.failed(error=f"broken pages: {broken}", message=summary, **data)
        return TaskResult.success(summary, **data)

    def _enqueue(self, url: str, queue: deque[str], seen: set[str]) -> None:
        parsed = urlparse(urldefrag(url).url)
        if parsed.scheme not in ("", "http", "https") or (parsed.netloc and parsed.netloc != _host()):
            return
        path = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        if not path.startswith("/") or path in seen or path.startswith(self.skip_prefixes):
            return
        seen.add(path)
        queue.append(path)
