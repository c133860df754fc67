"""WeCom (企业微信) as an application: the API client, the callback crypto, notices to employees, staff messages."""
