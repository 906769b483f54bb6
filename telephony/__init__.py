"""The line's SIP user agent and RTP on asyncio: `telephony.endpoint.SipEndpoint` turns SIP/RTP into
`telephony.call.Call` objects (audio frames, DTMF, transfer, hangup). See telephony/README.md."""
