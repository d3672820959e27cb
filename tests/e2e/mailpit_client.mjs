// Drives the npm package mailpit-api (2.x) against mailgate's /mailpit base URL and
// prints what it saw as one JSON object (tests/e2e/test_mailpit_clients.py checks it).
// Usage: node mailpit_client.mjs MODULE_DIR BASE_URL TOKEN
import { pathToFileURL } from "node:url";
import path from "node:path";

const [moduleDir, baseURL, token] = process.argv.slice(2);
const entry = path.join(moduleDir, "node_modules", "mailpit-api", "dist", "index.mjs");
const { MailpitClient } = await import(pathToFileURL(entry).href);

// Mailpit's clients authenticate with HTTP Basic: mailgate takes its API token as the password
const mailpit = new MailpitClient(baseURL, { auth: { username: "mailpit", password: token } });
const out = {};

out.info = await mailpit.getInfo();
out.webui = await mailpit.getConfiguration();
out.list = await mailpit.listMessages(0, 10);
out.search = await mailpit.searchMessages({ query: "subject:receipt" });
const id = out.search.messages[0].ID;
out.message = await mailpit.getMessageSummary(id);
out.latest = await mailpit.getMessageSummary();
out.headers = await mailpit.getMessageHeaders(id);
out.raw = await mailpit.getMessageSource(id);
const pdf = out.message.Attachments[0];
const blob = await mailpit.getMessageAttachment(id, pdf.PartID);
out.part = { type: blob.type, text: await blob.text() };
const logo = out.message.Inline[0];
const thumb = await mailpit.getAttachmentThumbnail(id, logo.PartID);
out.thumb = { type: thumb.type, size: thumb.size };

out.unread = await mailpit.setReadStatus({ IDs: [id], Read: false });
out.unreadAfter = (await mailpit.listMessages()).unread;
out.readAll = await mailpit.setReadStatus({ Read: true });
out.unreadAfterAll = (await mailpit.listMessages()).unread;

out.setTags = await mailpit.setTags({ IDs: [id], Tags: ["from-js", "Second"] });
out.tags = await mailpit.getTags();
out.rename = await mailpit.renameTag("from-js", "renamed");
out.deleteTag = await mailpit.deleteTag("Second");
out.tagsAfter = await mailpit.getTags();

out.sent = await mailpit.sendMessage({
  From: { Email: "js@example.com", Name: "JS" },
  To: [{ Email: "rcpt@example.com" }],
  Subject: "Sent from js",
  Text: "hello from node",
  Tags: ["node"],
  Attachments: [{ Filename: "n.txt", Content: Buffer.from("node file").toString("base64") }],
});
out.waited = await mailpit.waitForMessage({ query: 'subject:"Sent from js"' }, { timeout: 5000 });

out.release = await mailpit.releaseMessage(id, { To: ["someone@example.net"] });
try {
  await mailpit.releaseMessage(id, { To: ["someone@example.com"] });
  out.releaseRefused = "not refused";
} catch (error) {
  out.releaseRefused = String(error.message);
}

out.chaosSet = await mailpit.setChaosTriggers({ Recipient: { ErrorCode: 451, Probability: 50 } });
out.chaos = await mailpit.getChaosTriggers();
out.chaosReset = await mailpit.setChaosTriggers();

out.html = await mailpit.renderMessageHTML(id);
out.text = await mailpit.renderMessageText(id);
out.htmlCheck = await mailpit.htmlCheck(id);
out.linkCheck = await mailpit.linkCheck(id);

out.deleteSearch = await mailpit.deleteMessagesBySearch({ query: 'subject:"Sent from js"' });
out.afterDeleteSearch = (await mailpit.listMessages()).total;
out.deleteOne = await mailpit.deleteMessages({ IDs: [id] });
out.afterDeleteOne = (await mailpit.listMessages()).total;
out.deleteAll = await mailpit.deleteMessages();
out.afterDeleteAll = (await mailpit.listMessages()).total;

process.stdout.write(JSON.stringify(out));
