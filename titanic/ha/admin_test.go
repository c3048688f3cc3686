package ha

import (
	"reflect"
	"testing"

	"github.com/titanicmq/titanic/store"
)

func TestHistoryRoundTrip(t *testing.T) {
	for _, halted := range []bool{false, true} {
		h := PeerHistory{History: store.History{Applied: 90, Epochs: []store.Epoch{{Term: 1, Start: 1, End: 1}, {Term: 2, Start: 3, End: 43}, {Term: 5, Start: 46}}}, Halted: halted}
		got, err := DecodeHistory(EncodeHistory(h))
		if err != nil || !reflect.DeepEqual(got, h) {
			t.Fatalf("round trip: %+v, %v; want %+v", got, err, h)
		}
	}
	for _, bad := range [][][]byte{
		{[]byte("500"), []byte("not active")},
		{[]byte("200")},
		{[]byte("200"), []byte("x")},
		{[]byte("200"), []byte("9 stopped")},
		{[]byte("200"), []byte("9"), []byte("2 3")},
		{[]byte("200"), []byte("9"), []byte("2 3 1")},
		{[]byte("200"), []byte("9"), []byte("3 3 4"), []byte("2 5 0")},
	} {
		if _, err := DecodeHistory(bad); err == nil {
			t.Errorf("DecodeHistory(%q) accepted", bad)
		}
	}
}
