-- wrk script: POST a 1 KiB JSON body, as a channel's webhook would.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"pad":"' .. string.rep("x", 1012) .. '"}'
