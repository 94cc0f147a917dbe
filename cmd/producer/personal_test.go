package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/projector/projector/internal/testenv"
	"github.com/projector/projector/pkg/eventlog"
	"github.com/projector/projector/pkg/shred"
)

// The producer encrypts personal fields before they reach the log, refuses them in
// the clear unless told, refuses a wrong master key at start, and forgets a subject
// from the command line and over HTTP.
func TestPersonalDataIsEncryptedBeforeTheLogAndForgettingShredsIt(t *testing.T) {
	t.Parallel()
	testenv.MasterKey(t)
	topic := testenv.UniqueName(t)
	uniq := testenv.UniqueName(t)
	secret := strings.ReplaceAll(testenv.UniqueName(t), "_", "")
	user, email, name := "u-"+uniq, secret+"@example.test", "Grace "+secret
	data := `{"user_id":"` + user + `","email":"` + email + `","name":"` + name + `"}`
	out, err := runCmd(t, "", "send", brokersFlag(t), "--topic", topic, "--partitions", "3",
		"--type", "UserRegistered", "--subject", user, "--sequence", "1", "--data", data)
	if err != nil {
		t.Fatalf("send: %v\n%s", err, out)
	}
	raw := testenv.ReadAll(t, topic)
	if len(raw) != 1 {
		t.Fatalf("%d messages, want 1", len(raw))
	}
	if bytes.Contains(raw[0].Value, []byte(email)) || bytes.Contains(raw[0].Value, []byte(secret)) {
		t.Fatalf("the log holds personal data in the clear: %s", raw[0].Value)
	}
	if !bytes.Contains(raw[0].Value, []byte(user)) {
		t.Fatalf("the subject field must stay plain: %s", raw[0].Value)
	}
	ev, err := eventlog.FromMessage(raw[0])
	if err != nil || ev.Encryption != shred.Algorithm || ev.KeyID == "" || strings.Join(ev.EncryptedFields, ",") != "email,name" {
		t.Fatalf("encryption attributes: %+v, %v", ev, err)
	}
	got := decodeAll(t, topic)
	var v map[string]string
	if err := json.Unmarshal(got[0].Data, &v); err != nil || v["email"] != email || v["name"] != name || v["user_id"] != user {
		t.Fatalf("decrypted data %s, want %s", got[0].Data, data)
	}

	// Forget from the command line: the key goes, SubjectForgotten lands on the
	// subject's partition, and the old event now reads redacted.
	out, err = runCmd(t, "", "forget", brokersFlag(t), "--topic", topic, "--reason", "asked", user)
	if err != nil {
		t.Fatalf("forget: %v\n%s", err, out)
	}
	var fr forgetResult
	_, js, _ := strings.Cut(out, "{")
	if err := json.Unmarshal([]byte("{"+js), &fr); err != nil || fr.KeysDeleted != 1 || fr.Partition != raw[0].Partition || fr.Offset != 1 {
		t.Fatalf("forget said %q (%v), want 1 key deleted and the event at partition %d offset 1", out, err, raw[0].Partition)
	}
	got = decodeAll(t, topic)
	if len(got) != 2 || got[1].Type != shred.TypeSubjectForgotten || got[1].Subject != user {
		t.Fatalf("log after forget: %+v", got)
	}
	if err := json.Unmarshal(got[0].Data, &v); err != nil || v["email"] != shred.Redacted || v["name"] != shred.Redacted ||
		strings.Join(got[0].Redacted, ",") != "email,name" {
		t.Fatalf("after forget the registration reads %s (redacted %v), want both fields %q", got[0].Data, got[0].Redacted, shred.Redacted)
	}
	// A forgotten subject's personal data is not published again.
	_, err = runCmd(t, "", "send", brokersFlag(t), "--topic", topic, "--type", "UserRegistered", "--subject", user, "--data", data)
	if err == nil || !strings.Contains(err.Error(), "forgotten") {
		t.Fatalf("send for a forgotten subject: %v, want refused", err)
	}

	// Without a master key personal data is refused, unless allowed in the clear.
	_, err = runCmd(t, "", "send", brokersFlag(t), "--topic", topic, "--master-key=", "--type", "UserRegistered", "--subject", "x-"+uniq,
		"--data", `{"user_id":"x-`+uniq+`","email":"x@example.test","name":"X"}`)
	if err == nil || !strings.Contains(err.Error(), "PROJECTOR_MASTER_KEY") || !strings.Contains(err.Error(), "email, name") {
		t.Fatalf("send without a master key: %v, want a refusal naming the fields and the setting", err)
	}
	if out, err := runCmd(t, "", "send", brokersFlag(t), "--topic", topic, "--master-key=", "--plaintext-personal-data",
		"--type", "UserRegistered", "--subject", "x-"+uniq, "--data", `{"user_id":"x-`+uniq+`","email":"x@example.test","name":"X"}`); err != nil {
		t.Fatalf("send --plaintext-personal-data: %v\n%s", err, out)
	}
	// A wrong master key is refused at start, before anything is published.
	_, err = runCmd(t, "", "send", brokersFlag(t), "--topic", topic, "--master-key="+shred.NewMasterKey(),
		"--type", "UserChangedPassword", "--subject", user, "--data", `{"user_id":"`+user+`"}`)
	if err == nil || !strings.Contains(err.Error(), "does not open this key store") {
		t.Fatalf("a wrong master key: %v", err)
	}
	if _, err = runCmd(t, "", "send", brokersFlag(t), "--topic", topic, "--master-key=not-a-key",
		"--type", "UserChangedPassword", "--subject", user, "--data", `{}`); err == nil || !strings.Contains(err.Error(), "32 bytes") {
		t.Fatalf("a malformed master key: %v", err)
	}
	if n := len(testenv.ReadAll(t, topic)); n != 3 {
		t.Fatalf("%d events in the log, want 3: nothing refused was published", n)
	}
}

func TestForgetOverHTTPNeedsTheTokenAndTheKeyStore(t *testing.T) {
	t.Parallel()
	topic := testenv.Topic(t, 2)
	keys := testenv.Keys(t)
	pub, err := eventlog.NewPublisher(eventlog.PublisherConfig{Brokers: testenv.Kafka(t), Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pub.Close() })
	forget := func(ctx context.Context, subject, reason string) (forgetResult, error) {
		return forgetSubject(ctx, keys, pub, "test", subject, reason)
	}
	with := httptest.NewServer(newIngest(ingestConfig{Tokens: []string{"s3cret"}, MaxBody: 4096, PublishTimeout: 10 * time.Second, Forget: forget}, pub))
	t.Cleanup(with.Close)
	without := httptest.NewServer(newIngest(ingestConfig{Tokens: []string{"s3cret"}, MaxBody: 4096, PublishTimeout: 10 * time.Second}, pub))
	t.Cleanup(without.Close)
	subject := "u-" + testenv.UniqueName(t)
	post := func(base, token, subject, body string) (int, string) {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, base+"/v1/subjects/"+subject+"/forget", strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	if code, _ := post(with.URL, "", subject, ""); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	if code, _ := post(with.URL, "wrong", subject, ""); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d", code)
	}
	if code, body := post(without.URL, "s3cret", subject, ""); code != http.StatusNotImplemented || !strings.Contains(body, "master-key") {
		t.Fatalf("no key store: %d %s", code, body)
	}
	if code, body := post(with.URL, "s3cret", subject, `{"reason":`); code != http.StatusBadRequest {
		t.Fatalf("malformed body: %d %s", code, body)
	}
	if len(testenv.ReadAll(t, topic)) != 0 {
		t.Fatal("a refused request published an event")
	}
	if _, err := keys.DataKeys(context.Background(), []string{subject}); err != nil {
		t.Fatal(err)
	}
	code, body := post(with.URL, "s3cret", subject, `{"reason":"asked by email"}`)
	var fr forgetResult
	if code != http.StatusAccepted || json.Unmarshal([]byte(body), &fr) != nil || fr.KeysDeleted != 1 || fr.Subject != subject {
		t.Fatalf("forget: %d %s", code, body)
	}
	got := decodeAll(t, topic)
	if len(got) != 1 || got[0].Type != shred.TypeSubjectForgotten || got[0].ID != fr.EventID {
		t.Fatalf("log holds %+v, want the SubjectForgotten event", got)
	}
	if _, err := keys.DataKeys(context.Background(), []string{subject}); err == nil || !strings.Contains(err.Error(), "forgotten") {
		t.Fatalf("a key for a forgotten subject: %v", err)
	}
}

// What could smuggle personal data past the encryption, or purge read models
// without deleting a key, is refused before anything is published.
func TestProducerRefusesWhatWouldBypassTheShredding(t *testing.T) {
	t.Parallel()
	testenv.MasterKey(t)
	topic := testenv.UniqueName(t)
	uniq := testenv.UniqueName(t)
	for name, c := range map[string]struct{ args []string }{
		"a personal field spelled in another case": {[]string{"--type", "UserRegistered", "--subject", "u-" + uniq,
			"--data", `{"user_id":"u-` + uniq + `","Email":"plain@example.test","name":"N"}`}},
		"encryption attributes from the client": {[]string{"--json", `{"specversion":"1.0","id":"x1","source":"t","type":"UserRegistered","subject":"u-` + uniq +
			`","encryption":"aes-256-gcm","keyid":"k1","encryptedfields":"name","data":{"user_id":"u-` + uniq + `","email":"plain@example.test","name":"bm9wZQ=="}}`}},
		"a SubjectForgotten sent by hand": {[]string{"--type", "SubjectForgotten", "--subject", "u-" + uniq,
			"--data", `{"subject_id":"u-` + uniq + `"}`}},
	} {
		out, err := runCmd(t, "", append([]string{"send", brokersFlag(t), "--topic", topic, "--partitions", "1"}, c.args...)...)
		if err == nil {
			t.Errorf("%s: accepted: %s", name, out)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if n := len(testenv.ReadAll(t, topic)); n != 0 {
		t.Fatalf("%d events published", n)
	}
}
