"""What the service's HTML pages (/console, /docs) send with them: a strict policy."""


def page_headers(img_src="'self'", connect_src="'self'"):
    """Headers for a page that runs only this host's own scripts and styles."""
    policy = "; ".join([
        "default-src 'none'", "script-src 'self'", "style-src 'self'", f"img-src {img_src}",
        f"connect-src {connect_src}", "base-uri 'none'", "form-action 'none'",
        "frame-ancestors 'none'",
    ])
    return {
        "Content-Security-Policy": policy,
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }
